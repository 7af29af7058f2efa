from mmzcli.cli import main

main()
