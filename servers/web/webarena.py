from .env import BrowserEnv as WebArenaEnv
