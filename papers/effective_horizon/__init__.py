"""The stochastic effective horizon and SQIRL (Laidlaw, Zhu, Russell, Dragan 2024): `horizon.analyze`
(exact, on a tabular MDP), `agents.sqirl` / `agents.gorp` and their sample-complexity search, `analysis`
(PPO/DQN sample complexity from run directories, Spearman correlations), run by `loop.run`."""
