"""Code shared by every InferGate service: settings, logging, request ids, errors, HTTP clients."""
