"""nerve components and the small framework they share."""
