"""``python -m services.group``: run the group service until SIGTERM/SIGINT.

Settings come from the environment (IM_*); see im.standalone.main_for.
"""

from im.standalone import main_for

main_for("group")
