"""Network definitions and loaders (dlib ResNet port, MobileFaceNet, generator backends); weights/ holds
weights trained by this project with TRAINING.md."""
