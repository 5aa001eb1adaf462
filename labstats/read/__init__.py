"""Read: a run's points from Redis or from an archive file behind one interface, the
index of runs, downsampling, and the recipe that regenerates a run."""
