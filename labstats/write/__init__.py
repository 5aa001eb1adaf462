"""Write: the background side of the logger: the bounded queue, batches, chunk encoding,
the transport to Redis, the spool, tensor files, and the media threads."""
