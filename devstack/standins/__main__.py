from devstack.standins.server import main

main()
