"""Who calls: projects, access keys, roles, request signatures and the first admin."""
