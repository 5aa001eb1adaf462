"""Operations: archiving runs to Parquet and back, the restore drill, replaying the spool,
and importing TensorBoard event files."""
