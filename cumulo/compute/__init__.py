"""Compute (Nova v2.1): api, conductor, scheduler, the compute manager and virt drivers."""
