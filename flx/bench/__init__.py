"""Benchmarks (never asserted in tests): the loss kernel (:mod:`.losses`), the executors (:mod:`.executors`) and
a detection training step and evaluation against torchvision's stock path (:mod:`.detection`)."""
