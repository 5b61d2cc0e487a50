"""(to be written: start/stop/attach clusters of MPI engines)"""
