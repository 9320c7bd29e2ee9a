"""course_lib: the shared library of the unsupervised image classification course kit.

Modules, in the order data flows: data (and download, signs) -> augment -> models -> methods ->
clustering -> metrics -> viz; runtime sets up seeds, devices and profiles; benchmark runs it all.
"""
__version__ = "0.1.0"
