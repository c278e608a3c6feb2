"""The libvirt driver."""
