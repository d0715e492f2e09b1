"""User service: accounts and password hashes (gRPC im.v1.UserService)."""
