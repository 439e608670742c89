"""echo: the smallest botbus service, and the template to copy."""
