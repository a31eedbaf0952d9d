"""The paper's experiments, run by `keras-dropneuron reproduce` (not imported by the library).

`setups` holds the networks and training set-ups, `data` the data sets, `runner`
trains, prunes, slims and tabulates, `timing` measures inference, `plots` draws
figures with matplotlib.
"""
