"""Code that runs inside or beside the Crossbar router."""
