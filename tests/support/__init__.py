"""Test-only infrastructure: real local servers that the test suite talks to over the network."""
