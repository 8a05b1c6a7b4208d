"""The EC2 Query API (as OpenStack's ec2-api offered it): a front over the Compute, Image,
Network and Block Storage APIs, called with the caller's token; it owns only its id
mappings, tags and import tasks."""
