//! The registry client: references, authentication, pull and push over the OCI distribution API.
