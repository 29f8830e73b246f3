"""quantizer component."""
