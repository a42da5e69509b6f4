"""Dev environments: an sshd the user's IDE attaches to, stopped after a time without sessions."""
