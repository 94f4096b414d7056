"""The alert keeper: alert records with a lifecycle (firing, acknowledged, silenced, resolved), kept on disk."""
