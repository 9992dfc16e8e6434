"""Extreme Q-Learning (Garg, Hejna, Geist, Ermon, ICLR 2023), offline: Gumbel-regression V, twin Q, AWR."""
