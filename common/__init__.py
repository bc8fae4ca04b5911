"""Small helpers shared by every layer of uio_robot (envs, policies, agent, bridges)."""
