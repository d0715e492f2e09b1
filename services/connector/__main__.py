from im.standalone import main_for

main_for("connector")
