"""Helpers shared by test modules (imported as ``tests.support.<module>``; test modules never import each other)."""
