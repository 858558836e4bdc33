"""Data sets: what they share (:mod:`.base`), the synthetic task, image sets (cats vs dogs, your folders,
CIFAR-10), tables, the shapes detection set, registered data sets, frozen backbone features, and loading a
config's data once per process (:mod:`.load`)."""
