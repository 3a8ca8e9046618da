"""hearth's command line and (later) HTTP front-ends."""
