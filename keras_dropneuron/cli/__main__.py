"""`python -m keras_dropneuron.cli`: the `keras-dropneuron` command without its quiet start."""

import sys

from keras_dropneuron.cli import main

sys.exit(main())
