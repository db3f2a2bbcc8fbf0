"""The built-in MuJoCo tabletop suite: the scene (`scene`), the environment (`env`) and its
scripted experts (`experts`)."""
