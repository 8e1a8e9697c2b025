"""Files: data sets, HDF5 traces."""
