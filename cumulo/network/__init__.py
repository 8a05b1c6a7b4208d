"""The Network service (Neutron's Networking v2.0 API) and its data plane."""
