"""The S3 API on the object store (as Swift's s3api middleware): a bucket is a container
of the credential's project, an object an object; requests are checked against Identity's
EC2 credentials and carried out as Swift requests on the same proxy."""
