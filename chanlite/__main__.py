from chanlite.cli import main

main()
