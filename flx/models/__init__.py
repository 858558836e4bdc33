"""Models: the classifiers (built-in, registered, torchvision's, ``module:function``), the tiny RetinaNet's
parts (:mod:`.retinanet`) and inference (:mod:`.inference`)."""
