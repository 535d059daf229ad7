"""HTTP plumbing shared by every router: middleware, client address, errors, request context, shared request pieces."""
