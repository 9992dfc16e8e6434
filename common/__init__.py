"""rlrepro's shared core: environments, replay, networks, the run loop and its plumbing."""
