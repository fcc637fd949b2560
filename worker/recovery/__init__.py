"""Making sure every delivered task ends, whatever happens to the worker that took it: the run
claim that lets one delivery run a task at a time, and the lease that hands a dead worker's
deliveries back to the queue within seconds."""
