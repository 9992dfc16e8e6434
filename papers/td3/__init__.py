"""TD3 (Fujimoto, van Hoof & Meger, 2018) from states, with the authors' settings: `agent.TD3Agent`."""
