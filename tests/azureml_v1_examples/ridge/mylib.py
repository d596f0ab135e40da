import numpy as np


def get_alphas():
    # list of numbers from 0.0 to 1.0 with a 0.25 interval
    return np.arange(0.0, 1.0, 0.25)
