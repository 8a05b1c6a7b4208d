"""Tempest (OpenStack's API test suite) against a fresh cumulo cloud."""
