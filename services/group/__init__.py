"""Group service: conversations, members and cursors (gRPC im.v1.GroupService)."""
