"""``python -m services.user``: run the user service until SIGTERM/SIGINT.

Settings come from the environment (IM_*); see im.standalone.main_for.
"""

from im.standalone import main_for

main_for("user")
