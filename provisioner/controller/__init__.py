"""The workspace controller: approved access requests in, workspaces out."""
