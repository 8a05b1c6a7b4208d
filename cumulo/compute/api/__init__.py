"""Compute API v2.1 (REST): routes and request/response shapes; rules live in compute.servers."""
