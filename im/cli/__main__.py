from im.cli.main import main

main()
