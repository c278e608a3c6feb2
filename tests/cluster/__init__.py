"""Several fabric servers on one PostgreSQL registry, over hosts shared through libvirtd."""
