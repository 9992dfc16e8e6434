"""Dual RL (Sikchi, Zheng, Zhang, Niekum, ICLR 2024): f-DVL (offline RL) and ReCOIL (offline imitation)."""
