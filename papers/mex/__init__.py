"""MEX-MF (Liu et al., 2023): TD3 whose critic also maximises the value of its greedy policy (`agent`)."""
