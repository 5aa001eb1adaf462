"""Capture: what runs on the training thread besides the call itself: copies of values
(host and device), and the run's recorded environment."""
