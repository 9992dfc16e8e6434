"""SS-ORL (Zheng et al., 2023): action-free trajectories proxy-labelled by an IDM (`loop`, `idm`)."""
