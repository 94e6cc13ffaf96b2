"""Kill requests from people and scripts: ``jobreaper kill`` and the function behind it."""
