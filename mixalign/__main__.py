from mixalign.cli import main

main()
